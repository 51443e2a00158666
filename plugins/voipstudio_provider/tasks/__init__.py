"""The bodies of the DAGs' tasks, one module per DAG (``archive`` serves both archive DAGs).

A task body reads its params, Variables and connections (:mod:`.settings`), calls the
engines of :mod:`voipstudio_provider.engine`, and returns what goes to XCom.
"""
