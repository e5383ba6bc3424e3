"""CoffeeBus gateway."""
