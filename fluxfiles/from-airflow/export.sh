#!/bin/sh
# Stands in for the upstream exporter: writes landing/HOUR.csv for each hour of DATE, then
# the marker landing/HOUR.done that the sensor waits for. `sh export.sh 2024-03-01 [HH]`
# writes one day, or only hour HH of it.
set -eu
date=$1
mkdir -p landing
for h in ${2:-00 01 02 03 04 05 06 07 08 09 10 11 12 13 14 15 16 17 18 19 20 21 22 23}; do
    hour="${date}T$h"
    awk -v hour="$hour" -v h="$h" 'BEGIN {
        split("view click view buy view", kind, " ")
        print "# ts,user,event"
        for (i = 0; i < 5 + h; i++) printf "%s:%02d,u%d,%s\n", hour, (i * 7) % 60, (i * 3 + h) % 11, kind[(i + h) % 5 + 1]
    }' > "landing/$hour.csv"
    : > "landing/$hour.done"
done
