"""Parley's AWS deployment as a Pulumi program.

Modules: ``config`` (typed settings), ``policies`` (IAM documents and their checker),
``containers`` (the ECS container definition) are pure; ``tables``, ``network`` and ``stack``
create Pulumi resources.
"""
