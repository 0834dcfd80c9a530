"""The click command line: thin wrappers over tools, aws and core."""
