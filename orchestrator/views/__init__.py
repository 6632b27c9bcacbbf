"""Output in one place: what the commands print (text, tables, GitHub annotations, SARIF,
HTML). Views read plans, reports and run records; they change nothing and run nothing."""
