"""Domain code of the mail service, shared by every function through the common layer."""
