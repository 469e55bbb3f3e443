"""detlite.keras: Keras 3 trials. Importing this package never imports keras."""
