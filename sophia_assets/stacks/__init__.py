"""Infrastructure stacks: which Pulumi program deploys what, and how a stack is run."""
