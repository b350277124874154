"""Applications built on the toolkit: the bench report renderer (``apps.report``) and the
image classification demo (``apps.classify``). Importing this package is light."""
