"""asm-plugin-template: the smallest complete asm plugin.

The entry point is :mod:`asm_plugin_template.plugin`; the provider lives in
:mod:`asm_plugin_template.shout` and is imported only when a config uses it.
"""

__version__ = "0.1.0"
