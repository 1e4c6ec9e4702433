from diamond.cli import app

app()
