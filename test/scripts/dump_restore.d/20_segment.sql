-- Segment map: edit the default map in every way a user can (rename, new
-- segment, re-partition, deleted default segment, changed description), so
-- that the restore must bring back exactly this map: not the defaults, and
-- not the defaults plus this.
BEGIN;
UPDATE loyalty.segment SET name = 'Rising Stars' WHERE name = 'Promising';
UPDATE loyalty.segment SET description = 'Our best customers' WHERE name = 'Champions';
INSERT INTO loyalty.segment (name, display_order, description) VALUES ('VIP', 0, 'Champions who also spend the most');
UPDATE loyalty.segment_rule SET m_max = 4 WHERE segment = 'Champions' AND r_min = 5 AND f_min = 4;
INSERT INTO loyalty.segment_rule (segment, r_min, r_max, f_min, f_max, m_min, m_max) VALUES ('VIP', 5, 5, 4, 4, 5, 5);
-- Need Attention (R3 F3) merges into Loyal
DELETE FROM loyalty.segment_rule WHERE segment = 'Need Attention';
UPDATE loyalty.segment_rule SET f_min = 3 WHERE segment = 'Loyal' AND r_min = 3;
DELETE FROM loyalty.segment WHERE name = 'Need Attention';
COMMIT;
