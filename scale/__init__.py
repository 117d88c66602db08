"""SCALE (M5Product, CVPR 2022) on the shared ``bench.nn`` blocks; the adapter is :class:`scale.model.Scale`
(registered as ``scale``). Import ``scale.model`` directly: this package keeps its import light."""
