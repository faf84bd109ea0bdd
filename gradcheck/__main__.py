from gradcheck.cli import entry

entry()
