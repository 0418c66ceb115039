"""The one error type of things a user can fix.

`CrosspathError` is raised for a bad option or config file, a task that does not load, a model
that is not there, a run directory that is taken or not writable, a server that is down: its
message says what is wrong and names the file, line, option, value or URL. `crosspath` prints it
and exits with code 2, without a traceback. Subclasses also derive from the built-in type that
fits (ValueError, FileExistsError, RuntimeError), so existing `except` clauses keep working.
"""


class CrosspathError(Exception):
    """Something the user can fix; the message says what and where."""
