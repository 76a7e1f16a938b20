"""What the tests share: loopback contract servers, a loopback sshd, source databases for the
capture tests, processes of this environment, and the image-build stand-ins. Benchmarks import
the contract servers from here too; nothing here ships in the installed package."""
