"""``MNISTLitModule``: the original template's module name, kept so old configs still work.

It is :class:`~src.models.classifier_module.ClassifierLitModule`; nothing MNIST-specific remains.
"""

from src.models.classifier_module import ClassifierLitModule


class MNISTLitModule(ClassifierLitModule):
    """The original template's LightningModule name; see :class:`ClassifierLitModule`."""


__all__ = ["MNISTLitModule"]
