"""Where trial workers run: the built-in resource managers (``local``).

Plugins register resource managers through ``detlite_register_resource_managers``;
``detlite.resources.plugin`` registers the built-in ones the same way.
"""
