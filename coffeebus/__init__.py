"""CoffeeBus coffeebus."""
