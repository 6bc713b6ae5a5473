"""`battui figures`: the paper's figures from runs, checkpoints and report JSON.

    battui figures runs/digits-cnn-bat-* runs/digits-cnn-pgd-at-* -o figs --format png,pdf

One module per figure, each a function from grouped sources to a matplotlib
`Figure` (Agg canvas, no pyplot, no display needed):

- `per_class.per_class_figure`  per-class clean and robust error, methods side by side (paper Fig. 1)
- `steps.steps_figure`          attack steps to misclassify per source class (Fig. 2)
- `targets.target_figure`       target-class distribution of flipped samples (Fig. 2/3)
- `targets.confusion_figure`    adversarial confusion heat map (Fig. 3)
- `curves.curves_figure`        avg and worst-class robust error per epoch, seeds as a band

`sources` reads the SOURCEs, `build` makes every figure they allow and writes
them, `style` holds the shared look (Okabe-Ito colours, 3.4 in column width),
`cli` registers the command.
"""
