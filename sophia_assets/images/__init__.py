"""Container images: the Dockerfile, its build context, its rules and its build on Build Cloud."""
