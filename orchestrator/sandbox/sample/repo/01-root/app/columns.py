"""Which item columns the page shows, in order, each only when the rows have it."""


def text(value):
    return "" if value is None else str(value)


def day(value):
    return "" if value is None else value.strftime("%Y-%m-%d")


SHOWN = [
    ("id", "#", text),
    ("name", "Name", text),
    ("owner_name", "Owner", text),
    ("created", "Added", day),
]
