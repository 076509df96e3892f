/*
 * kpi.h
 *		The KPI family: the statistics behind campaign lift (Welch's t
 *		interval for a difference of means, optional CUPED adjustment) and
 *		the Student t quantile they need.
 */
#ifndef KPI_H
#define KPI_H

#include "postgres.h"

/* Two-sided confidence level of every interval the family reports. */
#define KPI_CONFIDENCE 0.95

extern double KpiStudentTCdf(double t, double df);
extern double KpiStudentTQuantile(double p, double df);

#endif							/* KPI_H */
