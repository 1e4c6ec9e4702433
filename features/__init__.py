"""Features: the customer-history contract, point-in-time features and labels."""
