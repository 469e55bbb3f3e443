"""The master's web UI: static HTML, CSS and JavaScript modules, served by
``detlite.master.routers.ui``. No build step: the browser loads ``app.js`` as an ES module,
which imports its siblings; charts use the Plotly.js that the ``plotly`` package ships.
"""
