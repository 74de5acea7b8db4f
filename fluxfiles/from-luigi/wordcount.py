# The Luigi pipeline this example ports (kept for comparison; flux does not read it).
# Luigi's word-count example, with a per-day step in front of the weekly reduce.
import datetime

import luigi


class InputText(luigi.ExternalTask):
    """A day's text, written by something outside the pipeline."""
    date = luigi.DateParameter()

    def output(self):
        return luigi.LocalTarget(self.date.strftime("text/%Y-%m-%d.txt"))


class Words(luigi.Task):
    """A day's words, one per line, lower case."""
    date = luigi.DateParameter()

    def requires(self):
        return InputText(self.date)

    def output(self):
        return luigi.LocalTarget(self.date.strftime("data/words/%Y-%m-%d.txt"))

    def run(self):
        with self.input().open("r") as src, self.output().open("w") as out:
            for line in src:
                for word in line.lower().split():
                    out.write(word + "\n")


class WordCount(luigi.Task):
    """Words of the seven days that end on `date`, most frequent first."""
    date = luigi.DateParameter()

    def requires(self):
        return [Words(self.date - datetime.timedelta(days=n)) for n in range(6, -1, -1)]

    def output(self):
        return luigi.LocalTarget(self.date.strftime("data/counts/%Y-%m-%d.txt"))

    def run(self):
        counts = {}
        for target in self.input():
            with target.open("r") as f:
                for word in f:
                    counts[word.strip()] = counts.get(word.strip(), 0) + 1
        with self.output().open("w") as out:
            for word, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                out.write(f"{word} {n}\n")


if __name__ == "__main__":
    luigi.run()
