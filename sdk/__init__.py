"""CoffeeBus sdk."""
