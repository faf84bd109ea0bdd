from gradcheck.cli import entry

if __name__ == "__main__":  # not when multiprocessing re-imports it as __mp_main__
    entry()
