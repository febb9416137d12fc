"""The platform's model: aggregates, value objects, domain events and errors. No I/O here."""
