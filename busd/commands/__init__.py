"""The commands busctl sends, one module each, on both sides of the wire.

Each module owns one command, written once: its typed arguments (a frozen
``Args``), ``parse(body)`` (the request body as it came, checked; a bad one
is a BAD_ARGUMENTS error with one clear line), ``handle(host, args)`` on the
master's command thread (``host`` is a :class:`typing.Protocol` the module
declares, so this folder imports only ``busd.core``), and for busctl
``add_arguments(subparser)``, ``request(...)`` (the body it sends) and
``render(result, ...)`` (the text it prints for people)::

    busctl  --add_arguments, request-->  wire  --parse-->  Args  --handle(host)-->  result
    busctl  <--render----------------------------------------------------------  result

``busd.master.commands`` and ``busd.pool.commands`` register the handlers on
the master; ``busd.client.ctl`` builds busctl's parser and output from the
same modules.  The read-only commands the hub answers (``ping``, ``status``,
``workers``, ``clients``) have their output here only.
"""
