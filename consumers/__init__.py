"""CoffeeBus consumers."""
