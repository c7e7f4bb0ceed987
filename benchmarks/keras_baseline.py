"""Baselines B and D: the same model written by hand in Keras, tutorial-style (B) or tuned by hand (D, --tuned).

    python benchmarks/keras_baseline.py --model lenet5 --data-dir DIR --epochs 10 --batch-size 128 \
        --learning-rate 0.002 --out b.json [--tuned]

B: from_tensor_slices(...).shuffle(10000).batch(B).map(preprocess).prefetch, compile, fit with the
held-out images as validation_data. D (--tuned): every split preprocessed once into a float32 tensor
(normalized, resized), from_tensor_slices(...).shuffle(all).batch(B).prefetch, compile with
steps_per_execution=16. A callback times each epoch and, outside the timed path, evaluates on the test set.
--model fast is model_specs/fast.yaml's recipe written by hand (D only).
"""

import time

import keras
import tensorflow as tf

from common import Report, arguments, learning_rate, load_mnist

args = arguments(__doc__.splitlines()[0], tuned=True)
if args.mixed_bfloat16:  # the precision mnist-keras trains the spec in here (runtime.mixed_precision: auto)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
data = load_mnist(args.data_dir)
n_train = len(data["x_train"]) - args.validation
x_train, y_train = data["x_train"][:n_train], data["y_train"][:n_train]
x_val, y_val = data["x_train"][n_train:], data["y_train"][n_train:]


def preprocess(images, labels):
    images = (tf.cast(images, tf.float32) / 255.0 - args.mean) / args.std
    if args.model == "lenet5":
        images = tf.image.resize(images[..., tf.newaxis], (32, 32))
    elif args.model == "fast":
        images = images[..., tf.newaxis]
    return images, labels


def dataset(x, y, shuffle=False):
    if args.tuned:  # preprocessed once, in memory
        x, y = preprocess(x, y)
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        ds = ds.shuffle(len(y)) if shuffle else ds
        return ds.batch(args.batch_size).prefetch(tf.data.AUTOTUNE)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(10000)
    return ds.batch(args.batch_size).map(preprocess).prefetch(tf.data.AUTOTUNE)


train_ds = dataset(x_train, y_train, shuffle=True)
val_ds = dataset(x_val, y_val) if len(y_val) else None
test_ds = dataset(data["x_test"], data["y_test"])

if args.model == "lenet5":
    model = keras.Sequential([
        keras.Input((32, 32, 1)),
        keras.layers.Conv2D(6, 5, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 5, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(120, activation="relu"),
        keras.layers.Dense(84, activation="relu"),
        keras.layers.Dense(10),
    ])
elif args.model == "fast":
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 5, padding="same", use_bias=False),
        keras.layers.MaxPooling2D(),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
        keras.layers.Conv2D(16, 5, use_bias=False),
        keras.layers.MaxPooling2D(),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])
else:
    model = keras.Sequential([
        keras.Input((28, 28)),
        keras.layers.Flatten(),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])

if args.mixed_bfloat16:  # the logits and the loss in float32
    model.add(keras.layers.Activation("linear", dtype="float32"))
steps_per_epoch = -(-n_train // args.batch_size)
warmup = round(args.warmup_epochs * steps_per_epoch)
schedule = keras.optimizers.schedules.CosineDecay(
    0.0 if warmup else args.learning_rate, args.epochs * steps_per_epoch - warmup,
    warmup_target=args.learning_rate if warmup else None, warmup_steps=warmup)
assert abs(float(schedule(steps_per_epoch)) - learning_rate(args, steps_per_epoch, steps_per_epoch)) < 1e-6
model.compile(optimizer=keras.optimizers.Adam(schedule),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
              steps_per_execution=16 if args.tuned else 1)


class Timer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.report = Report(args.out, n_train)

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.train_end = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        self.train_end = self.train_end or time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = time.perf_counter()
        self.train_end = self.train_end or end
        accuracy = self.model.evaluate(test_ds, verbose=0, return_dict=True)["accuracy"]
        self.report.epoch(self.train_end - self.start, end - self.start, accuracy, time.perf_counter() - end)


model.fit(train_ds, epochs=args.epochs, validation_data=val_ds, callbacks=[Timer()], verbose=2)
