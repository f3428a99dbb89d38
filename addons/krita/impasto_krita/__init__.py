"""impasto for Krita: a docker that sends the active layer to an impasto server and brings results back as layers.

The operations and their forms come from the server's Capabilities, so an operation added
on the server appears here with no new plugin release.

Layers: ``docker.py`` (the UI, Qt widgets) with ``forms.py`` (an op's form, built from its
Capabilities entry), ``jobs.py`` (a job's life: off the UI thread),
``document.py`` (the model of the Krita document: pixels out, layers in), and
``impasto_http.py`` (the standard-library HTTP client, copied in by addons/build.py).
"""

from krita import DockWidgetFactory, DockWidgetFactoryBase, Krita

from .docker import ImpastoDocker

DOCKER_ID = "impasto_docker"

Krita.instance().addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, DockWidgetFactoryBase.DockRight, ImpastoDocker))
