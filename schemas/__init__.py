"""CoffeeBus schemas."""
