"""The instrument's web page (``wavae web``): live controls and the playground; see ``app``."""
