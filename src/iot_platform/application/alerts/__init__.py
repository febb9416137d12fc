"""Alert rules, alerts, and the rule engine that raises and resolves them."""
