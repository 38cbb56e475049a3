"""`python -u -m harness_worker`: the worker process the Rust harness starts."""

from harness_worker.main import main

if __name__ == "__main__":
    main()
