"""CoffeeBus producers."""
