"""impasto for Krita: a docker that sends the active layer to an impasto server and brings results back as layers.

Layers: ``docker.py`` (the UI, Qt widgets), ``jobs.py`` (a job's life: off the UI thread),
``document.py`` (the model of the Krita document: pixels out, layers in), and
``impasto_http.py`` (the standard-library HTTP client, copied in by addons/build.py).
"""

from krita import DockWidgetFactory, DockWidgetFactoryBase, Krita

from .docker import ImpastoDocker

DOCKER_ID = "impasto_docker"

Krita.instance().addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, DockWidgetFactoryBase.DockRight, ImpastoDocker))
