"""placeholder until its owner fills it."""


def init_app(app):
    pass
