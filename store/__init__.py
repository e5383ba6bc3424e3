"""CoffeeBus store."""
