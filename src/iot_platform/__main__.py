from iot_platform.presentation.cli.main import cli

cli()
