"""The instrument's hardware panel: pots on an MCP3008, encoders, buttons and a status LED on GPIO.

Layers, from the kernel up (each its own module):

- ``gpio``: gpiod 2.x line requests behind ``GpioLines`` (edges as ``(line, level, t_ns)``);
- ``adc``: an MCP3008 behind ``SpiBus`` (spidev's ``xfer2``);
- ``fakes``: stand-ins for those two boundaries, and scripted hands (turns, presses);
- ``encoders``: quadrature decoding with detents and acceleration; button press / long press;
- ``pots``: EMA + deadband filtering and soft takeover;
- ``mapping``: the mapping file (TOML) from each physical control to a control name or action;
- ``panel``: the thread that ties them together and writes ``Controls`` through ``wavae.device.actions``.

``gpiod`` and ``spidev`` are optional (``pip install 'wavae-edge[panel]'``) and
imported only when a panel with such parts starts.
"""
