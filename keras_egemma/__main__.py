from keras_egemma.cli import run

run()
