"""detlite.tensorflow: TensorFlow trials. Importing this package never imports tensorflow."""
