"""ticket-router: the service that classifies support tickets and routes them to team queues."""

__version__ = "0.1.0"
