"""The project's one logger: modules log through `LOG`; the entry points set it up
(`utils.cli.setup_logging`), and library users configure it as any `logging` logger."""
import logging

LOG = logging.getLogger('densenet')
