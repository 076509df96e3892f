/*
 * segment.h
 *		Named RFM segments (Champions, Lost, ...) from the configurable map in
 *		loyalty.segment_rule, cached per backend.
 */
#ifndef LOYALTY_SEGMENT_H
#define LOYALTY_SEGMENT_H

#include "rfm_score.h"

/*
 * Name of the segment of a score computed with the given number of bins, or
 * NULL if the map has none.  The map is written on the 1..5 scale; scores of
 * other bin counts are rescaled first (see segment.c).  The result points
 * into the backend's cache: copy it before anything that may run SQL or
 * process invalidations.  Reads the map with SPI on first use after a change.
 */
extern const char *RfmSegmentOf(RfmScore score, int bins);

/* Register the cache's invalidation callbacks; called once from _PG_init. */
extern void SegmentInit(void);

#endif							/* LOYALTY_SEGMENT_H */
