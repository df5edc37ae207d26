from protect import create_app

app = create_app()
