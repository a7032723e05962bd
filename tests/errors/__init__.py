"""Hostile and incomplete input, signals: the message a user sees and that nothing is lost.

A user error stops the CLI with exit code 2 and one paragraph on stderr that names the file or flag
and the fix, never a traceback. Cases that have a right answer must give it, with no NaN anywhere.
Almost every case drives the CLI in-process with the colour-oracle networks (``tests.oracle``).
"""
