from lkca_edge.cli import entry

entry()
