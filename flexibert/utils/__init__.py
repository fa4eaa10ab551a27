"""Helpers every concern uses: atomic files and the command-line help format."""
