"""SENA's own logic, pure and unit-testable: prompts, question parsing, pair filters, noise, loss."""
