/*
 * mission.h
 *		Missions (mission.sql, doc/missions.md): the C part is the order
 *		feed (mission_feed.c), which appends the orders of tracked
 *		statements to loyalty.mission_order_delta while a mission or a
 *		referral program needs them.  Everything else is in mission.sql.
 */
#ifndef LOYALTY_MISSION_H
#define LOYALTY_MISSION_H

#include "postgres.h"

extern void MissionInit(void);

#endif							/* LOYALTY_MISSION_H */
