"""Run directories: their files (written atomically), their typed record, and the table of runs."""
