"""CoffeeBus bus."""
