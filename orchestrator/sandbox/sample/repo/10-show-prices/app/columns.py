"""Which item columns the page shows, in order, each only when the rows have it."""


def text(value):
    return "" if value is None else str(value)


def money(value):
    return "" if value is None else f"{value:.2f}"


def day(value):
    return "" if value is None else value.strftime("%Y-%m-%d")


SHOWN = [
    ("id", "#", text),
    ("name", "Name", text),
    ("note", "Note", text),
    ("tag", "Tag", text),
    ("price", "Price", money),
    ("owner_name", "Owner", text),
    ("created", "Added", day),
]
