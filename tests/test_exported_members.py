"""The public API is deliberate: everything in __all__ exists, nothing else is public."""

import retrovec


def test_all_names_exist():
    for name in retrovec.__all__:
        assert hasattr(retrovec, name), name


def test_public_names_are_exactly_all():
    public = {
        name
        for name, value in vars(retrovec).items()
        if not name.startswith("_") and not isinstance(value, type(retrovec))
    }
    assert public == set(retrovec.__all__) - {"__version__"}


def test_make_is_the_factory_function():
    assert callable(retrovec.make) and retrovec.make.__module__ == "retrovec.retro.factory"


def test_importing_retrovec_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, retrovec; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
